"""Relational storage of messages: one row per message, ordered child rows for its lists."""
import hashlib
import hmac
import os
import secrets
import threading
import time
from datetime import datetime, timezone

from sqlalchemy import (
    Boolean, CheckConstraint, DateTime, ForeignKey, Index, Integer, MetaData, String, Text,
    TypeDecorator, false, text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Stable, predictable names for every constraint and index, so migrations can name them.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_N_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# The API field each `message_key_values.channel` stores.
CHANNEL_FIELDS = {
    "read_map": "message_read_map",
    "email": "email_data",
    "sms": "sms_data",
    "api": "api_data",
    "beep": "beep_data",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator):
    """A timezone-aware UTC datetime on every backend (SQLite keeps no offset of its own)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and dialect.name == "sqlite":
            return value.astimezone(timezone.utc).replace(tzinfo=None)
        return value

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value


def utcnow() -> datetime:
    """Now, at the millisecond precision the API shows (and MongoDB stored)."""
    now = datetime.now(timezone.utc)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


class _ObjectIdSource:
    """MongoDB ObjectId layout: 4-byte seconds, 5 random bytes per process, 3-byte counter."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reseed()
        os.register_at_fork(after_in_child=self._reseed)

    def _reseed(self) -> None:
        self._process_part = os.urandom(5).hex()
        self._counter = secrets.randbelow(0xFFFFFF)

    def __call__(self) -> str:
        with self._lock:
            self._counter = (self._counter + 1) & 0xFFFFFF
            counter = self._counter
        return f"{int(time.time()) & 0xFFFFFFFF:08x}{self._process_part}{counter:06x}"


new_object_id = _ObjectIdSource()


class Message(Base):
    __tablename__ = "messages"

    id: Mapped[str] = mapped_column(String(24), primary_key=True, default=new_object_id)
    event_time: Mapped[datetime] = mapped_column(UTCDateTime)
    communication_id: Mapped[str | None] = mapped_column(Text)
    msg_type: Mapped[int | None] = mapped_column(Integer)
    type: Mapped[str | None] = mapped_column(Text)
    user_id: Mapped[str | None] = mapped_column(Text)
    received_config_id: Mapped[str | None] = mapped_column(Text)
    module_id: Mapped[int | None] = mapped_column(Integer)
    ref_id: Mapped[str | None] = mapped_column(Text)
    ref_display_id: Mapped[str | None] = mapped_column(Text)
    is_system_gen: Mapped[bool] = mapped_column(default=False, server_default=false())
    imap_config_id: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str | None] = mapped_column(Text)
    organization: Mapped[str | None] = mapped_column(Text)
    creation_time: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_update_time: Mapped[datetime | None] = mapped_column(UTCDateTime)
    is_deleted: Mapped[bool] = mapped_column(default=False, server_default=false())
    is_assignee_read: Mapped[bool] = mapped_column(default=False, server_default=false())
    customer_id: Mapped[str | None] = mapped_column(Text)
    customer_entity_id: Mapped[str | None] = mapped_column(Text)
    is_description: Mapped[bool] = mapped_column(default=False, server_default=false())
    # Bumped by every update through the API; the ETag, and the If-Match guard.
    row_version: Mapped[int] = mapped_column(default=1, server_default=text("1"))

    __table_args__ = (CheckConstraint("length(id) = 24", name="id_length"),)


# The access paths of lists (see migration 0002): newest first, overall and per
# organization (also serving time ranges), cursors per organization, and exact filters.
Index("ix_messages_creation_time_id", Message.creation_time.desc(), Message.id.desc())
Index("ix_messages_organization_creation_time_id", Message.organization,
      Message.creation_time.desc(), Message.id.desc())
Index("ix_messages_organization_id", Message.organization, Message.id)
for _column in ("ref_id", "customer_id", "communication_id", "user_id"):
    Index(f"ix_messages_{_column}", Message.__table__.c[_column])


class Attachment(Base):
    """One attachment id of a message; `ordinal` keeps the list's order."""

    __tablename__ = "message_attachments"

    message_id: Mapped[str] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True
    )
    ordinal: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    attachment_id: Mapped[str] = mapped_column(Text)


class KeyValue(Base):
    """One key/value object of a message: its `message_read_map` entries, in order, and its
    email/sms/api/beep data (at most one each), told apart by `channel`."""

    __tablename__ = "message_key_values"

    message_id: Mapped[str] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True
    )
    channel: Mapped[str] = mapped_column(String(8), primary_key=True)
    ordinal: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    keys_text: Mapped[str | None] = mapped_column(Text)
    values_text: Mapped[str | None] = mapped_column(Text)
    queryparam: Mapped[bool] = mapped_column(default=False, server_default=false())

    __table_args__ = (
        CheckConstraint(
            "channel IN (%s)" % ", ".join(f"'{c}'" for c in CHANNEL_FIELDS), name="channel"
        ),
        CheckConstraint("channel = 'read_map' OR ordinal = 0", name="one_object_per_data_channel"),
    )


class ApiKey(Base):
    """An API key, kept only as a salted SHA-256 digest of the secret shown once at creation
    (a fast hash fits a 256-bit random secret; the salt makes equal secrets differ). The
    secret's first 12 characters, `key_prefix`, find the row; the digest is then compared
    in constant time. Keys from before the salt (migration 0005) have an empty salt."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(Text, default="")
    organization: Mapped[str | None] = mapped_column(Text)
    all_organizations: Mapped[bool] = mapped_column(default=False)
    key_digest: Mapped[str] = mapped_column(String(64), unique=True)
    key_prefix: Mapped[str] = mapped_column(String(12), index=True)
    key_salt: Mapped[str] = mapped_column(String(32), default="", server_default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        CheckConstraint(
            "(organization IS NULL) = all_organizations", name="organization_or_all"
        ),
    )

    @staticmethod
    def digest(salt: str, secret: str) -> str:
        return hashlib.sha256((salt + secret).encode()).hexdigest()

    @staticmethod
    def prefix(secret: str) -> str:
        return secret[:12]

    @staticmethod
    def matches(salt: str, digest: str, secret: str) -> bool:
        return hmac.compare_digest(ApiKey.digest(salt, secret), digest)

    @classmethod
    def generate(cls, organization: str | None, name: str = "") -> tuple["ApiKey", str]:
        """A new key and its secret; the secret is not stored and can't be recovered."""
        secret = "msk_" + secrets.token_urlsafe(32)
        salt = secrets.token_hex(16)
        key = cls(
            name=name,
            organization=organization,
            all_organizations=organization is None,
            key_digest=cls.digest(salt, secret),
            key_prefix=cls.prefix(secret),
            key_salt=salt,
        )
        return key, secret
