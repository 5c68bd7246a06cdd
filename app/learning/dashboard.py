"""The learning dashboard's figures."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.accounts.service import AccountService
from app.learning.cache import ResponseCache
from app.learning.experiments import ExperimentService
from app.learning.finetune import FineTuneService
from app.learning.training import TrainingDataService
from app.learning.versions import ModelVersionService


class LearningDashboard:
    """Computes the learning dashboard for one coach."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        accounts: AccountService,
        training: TrainingDataService,
        fine_tunes: FineTuneService,
        versions: ModelVersionService,
        cache: ResponseCache,
        experiments: ExperimentService,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._accounts = accounts
        self._training = training
        self._fine_tunes = fine_tunes
        self._versions = versions
        self._cache = cache
        self._experiments = experiments
