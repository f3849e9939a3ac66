"""The service objects of one running gateway, built once at start."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.auth.credentials import SecretBox
from gateway.metadata.db import Database
from gateway.service.accounts import AccountService
from gateway.service.bots import BotService
from gateway.service.buckets import BucketService
from gateway.service.context import Context
from gateway.service.groups import GroupService
from gateway.service.jobs import Jobs
from gateway.service.lifecycle import LifecycleService
from gateway.service.multipart import MultipartService
from gateway.service.objects import ObjectService
from gateway.service.packages import PackageService
from gateway.service.quota import QuotaService
from gateway.service.sessions import SessionService
from gateway.service.tagging import TaggingService
from gateway.service.tokens import TokenService
from gateway.service.webhooks import WebhookDispatcher
from gateway.settings import Settings
from storage_backends import Backend


@dataclass
class Gateway:
    ctx: Context
    accounts: AccountService
    buckets: BucketService
    objects: ObjectService
    multipart: MultipartService
    quotas: QuotaService
    sessions: SessionService
    groups: GroupService
    tokens: TokenService
    jobs: Jobs
    webhooks: WebhookDispatcher
    #: Customers, bots, their users, conversations (``bots.conversations``).
    bots: BotService
    #: Object and bucket tags.
    tagging: TaggingService
    #: Bucket lifecycle rules: their configuration and the run that applies them.
    lifecycle: LifecycleService

    @property
    def settings(self) -> Settings:
        return self.ctx.settings

    @property
    def packages(self) -> PackageService:
        """Bot-package folder rules and upload inspection (owned by the object service)."""
        return self.objects.packages

    @classmethod
    def build(cls, settings: Settings, db: Database, backend: Backend) -> Gateway:
        ctx = Context(settings, db, backend)
        # A malformed GATEWAY_MASTER_KEY (or key file) stops the start, not a first write.
        ctx.load_keyring()
        quotas = QuotaService(ctx)
        objects = ObjectService(ctx, quotas)
        multipart = MultipartService(ctx, objects)
        box = SecretBox.load(settings.secret_key, settings.data_dir)
        accounts = AccountService(ctx, box)
        jobs = Jobs(ctx, quotas.instance_id)
        return cls(ctx, accounts, BucketService(ctx, multipart), objects,
                   multipart, quotas, sessions=SessionService(ctx, accounts),
                   groups=GroupService(ctx, accounts.invalidate),
                   tokens=TokenService(ctx), jobs=jobs,
                   webhooks=WebhookDispatcher(ctx, jobs, box),
                   bots=BotService(ctx, accounts, BucketService(ctx, multipart), objects,
                                   quotas),
                   tagging=TaggingService(ctx),
                   lifecycle=LifecycleService(ctx, BucketService(ctx, multipart), objects,
                                              multipart))
