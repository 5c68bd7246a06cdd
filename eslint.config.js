// ESLint (flat config) for the browser scripts in static/: classic scripts (no modules), run by `make lint`.
// Beyond the recommended rules: a const/let/class used before its declaration runs into the temporal dead zone
// at load time (stop 24 fixed one in inbox.js that only a browser test had found).
const js = require("@eslint/js");
const globals = require("globals");

module.exports = [
  { ignores: ["static/vendor/**"] },
  js.configs.recommended,
  {
    files: ["static/**/*.js"],
    languageOptions: {
      ecmaVersion: 2022,
      sourceType: "script",
      globals: { ...globals.browser, htmx: "readonly" },
    },
    rules: {
      "no-use-before-define": ["error", { functions: false, classes: true, variables: true }],
      eqeqeq: ["error", "smart"],
      "no-implicit-globals": "error",
    },
  },
];
