"""The SMS messages resource: /ux/common/messenger/sms/ and /ux/common/messenger/sms/{id}/."""
import operator

from flask import request, url_for
from flask.views import MethodView
from flask_smorest import Blueprint, abort
from sqlalchemy import delete, func, select
from sqlalchemy.orm import selectinload
from werkzeug.routing import BaseConverter

from .auth import authenticate, current_key, require_organization_access
from .extensions import db
from .models import Message, utcnow
from .schemas import MessageFilterSchema, MessageSchema

blp = Blueprint(
    "sms", __name__, url_prefix="/ux/common/messenger/sms", description="SMS messages."
)

# Two statements load any number of messages' children (no N+1).
WITH_CHILDREN = (selectinload(Message.attachments), selectinload(Message.key_values))
COMPARISONS = {"": operator.eq, "gte": operator.ge, "gt": operator.gt, "lte": operator.le,
               "lt": operator.lt}


class ObjectIdConverter(BaseConverter):
    """A message id in URLs; anything else does not match the route, so it is a 404."""

    regex = "[0-9a-f]{24}"


OBJECT_ID_PARAMETER = {"type": "string", "pattern": "^[0-9a-f]{24}$"}


@blp.before_request
def require_api_key():
    authenticate()


@blp.before_request
def require_json_object_body():
    """415 for a body that is not JSON, 400 for JSON that is not an object. An empty body
    stands for `{}`, as it did in the original service."""
    if request.method not in ("POST", "PUT", "PATCH") or not request.get_data(cache=True):
        return
    if not request.is_json:
        abort(415, message="The body must be application/json.")
    if not isinstance(request.get_json(silent=True), dict):
        abort(400, message="The body must be a JSON object.")


def scoped(statement):
    """Limit a statement to the messages the current API key may see."""
    key = current_key()
    if key.all_organizations:
        return statement
    return statement.where(Message.organization == key.organization)


def filtered(statement, filters: dict):
    """Apply `field=value` and `field__gte=value` style filters."""
    for param, value in filters.items():
        if param != "ordering":
            name, _, comparison = param.partition("__")
            statement = statement.where(COMPARISONS[comparison](getattr(Message, name), value))
    return statement


def ordered(statement, terms: list[tuple[str, bool]] | None):
    """ORDER BY the `ordering` terms (default: newest first), then by id, so that pages are
    stable. Nulls sort lowest on both databases, as in MongoDB."""
    terms = terms or [("creation_time", True)]
    if all(name != "id" for name, _ in terms):
        terms = [*terms, ("id", terms[0][1])]
    return statement.order_by(*(
        getattr(Message, name).desc().nulls_last() if descending
        else getattr(Message, name).asc().nulls_first()
        for name, descending in terms
    ))


def get_or_404(message_id: str) -> Message:
    statement = scoped(select(Message).where(Message.id == message_id)).options(*WITH_CHILDREN)
    message = db.session.scalar(statement)
    if message is None:
        abort(404, message="No such message.")
    return message


def update_message(message_id: str, fields: dict) -> Message:
    message = get_or_404(message_id)
    if "organization" in fields:
        require_organization_access(fields["organization"])
    fields.setdefault("last_update_time", utcnow())
    message.update(fields)
    db.session.commit()
    return message


@blp.route("/")
class Messages(MethodView):
    @blp.arguments(MessageFilterSchema, location="query")
    @blp.response(200, MessageSchema(many=True))
    @blp.paginate(page_size=100, max_page_size=1000)
    def get(self, filters, pagination_parameters):
        """List messages, filtered and ordered (newest first unless asked)."""
        messages = filtered(scoped(select(Message)), filters)
        pagination_parameters.item_count = db.session.scalar(
            select(func.count()).select_from(messages.subquery())
        )
        page = (
            ordered(messages, filters.get("ordering"))
            .limit(pagination_parameters.page_size)
            .offset(pagination_parameters.first_item)
            .options(*WITH_CHILDREN)
        )
        return db.session.scalars(page).all()

    @blp.arguments(MessageSchema)
    @blp.response(201, MessageSchema)
    def post(self, fields):
        """Create a message; fields not sent get their defaults."""
        fields.setdefault("organization", current_key().organization)
        require_organization_access(fields["organization"])
        now = utcnow()
        message = Message(event_time=now, creation_time=now, last_update_time=now)
        message.update(fields)
        db.session.add(message)
        db.session.commit()
        location = url_for("sms.MessageItem", message_id=message.id, _external=True)
        return message, {"Location": location}


@blp.route("/<objectid:message_id>/")
class MessageItem(MethodView):
    @blp.response(200, MessageSchema)
    def get(self, message_id):
        """Read one message."""
        return get_or_404(message_id)

    @blp.arguments(MessageSchema)
    @blp.response(200, MessageSchema)
    def put(self, fields, message_id):
        """Update the fields sent; the others keep their values (as in the original)."""
        return update_message(message_id, fields)

    @blp.arguments(MessageSchema)
    @blp.response(200, MessageSchema)
    def patch(self, fields, message_id):
        """Update the fields sent; the others keep their values."""
        return update_message(message_id, fields)

    @blp.response(204)
    def delete(self, message_id):
        """Delete a message with its attachment ids and key/value objects."""
        deleted = db.session.execute(scoped(delete(Message).where(Message.id == message_id)))
        if deleted.rowcount == 0:
            abort(404, message="No such message.")
        db.session.commit()
