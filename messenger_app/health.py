"""Health checks for load balancers and orchestrators, open without an API key."""
from alembic.config import Config as AlembicConfig
from alembic.script import ScriptDirectory
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from .api import ErrorSchema, abort
from .config import PROJECT_ROOT
from .db import db

blp = Blueprint("health", __name__, description="Liveness and readiness.")
SCHEMA_HEAD = ScriptDirectory.from_config(
    AlembicConfig(str(PROJECT_ROOT / "alembic.ini"))
).get_current_head()


class ReplicaSchema(Schema):
    name = fields.String(required=True, metadata={"example": "10.0.0.2:5432/messenger"})
    state = fields.String(required=True, metadata={
        "description": "`ok` (serves reads), `lagging`, `down`, `invalid` (not a URL), or "
                       "`unknown` (not checked yet)."})
    lag_seconds = fields.Float(required=True, allow_none=True)
    reason = fields.String(metadata={"description": "Why it serves no reads."})


class HealthSchema(Schema):
    status = fields.String(required=True, metadata={"example": "ok"})
    schema = fields.String(metadata={"description": (
        "The Alembic revision of the database (`/readyz` only).")})
    replicas = fields.List(fields.Nested(ReplicaSchema), metadata={"description": (
        "`/readyz`, with DATABASE_REPLICA_URLS: each read replica as this process last saw "
        "it. A replica's trouble does not make the service unready: reads go to the "
        "primary meanwhile.")})


@blp.route("/healthz")
class Health(MethodView):
    @blp.doc(security=[], operationId="liveness")
    @blp.response(200, HealthSchema)
    def get(self):
        """Liveness: the process answers (the database is not asked)."""
        return {"status": "ok"}


@blp.route("/readyz")
class Ready(MethodView):
    @blp.doc(security=[], operationId="readiness")
    @blp.response(200, HealthSchema)
    @blp.alt_response(503, schema=ErrorSchema,
                      description="The database can't be reached or isn't migrated.")
    def get(self):
        """Readiness: the database answers and its schema is at the latest migration."""
        try:
            revision = db.connection().scalar(text("SELECT version_num FROM alembic_version"))
        except SQLAlchemyError:
            abort(503, message="The database can't be reached, or has no schema yet.")
        if revision != SCHEMA_HEAD:
            abort(503, message=f"The database schema is at {revision}, not {SCHEMA_HEAD}: "
                               "run the migrations.")
        ready = {"status": "ready", "schema": revision}
        return {**ready, "replicas": db.replicas.status()} if db.replicas else ready
