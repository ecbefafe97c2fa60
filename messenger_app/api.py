"""The flask-smorest Api: JSON error bodies (the database's 503 too), the OpenAPI
document's errors, and Swagger UI at /docs served from a package (no CDN)."""
import logging
from collections.abc import Callable
from copy import deepcopy
from http import HTTPStatus
from typing import NoReturn, cast

import flask_smorest
from flask import send_from_directory
from flask_smorest.utils import prepare_response
from marshmallow import Schema, fields
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from swagger_ui_bundle import swagger_ui_path
from werkzeug.exceptions import ServiceUnavailable
from werkzeug.http import HTTP_STATUS_CODES

from .schemas import ConfiguredLength

log = logging.getLogger(__name__)

# flask-smorest's abort (the error body's `message`, `errors`, `headers` from its keywords),
# typed as what it is: it never returns.
abort = cast(Callable[..., NoReturn], flask_smorest.abort)

FIELD_ERRORS_REF = {"$ref": "#/components/schemas/FieldErrors"}
# Field errors by field, parameter or header: a list of messages, or for a nested object or
# a list, the same again by key or index (`{"sms_data": {"keys": ["..."]}}`).
FIELD_ERRORS = {
    "type": "object",
    "additionalProperties": {"anyOf": [{"type": "array", "items": {"type": "string"}},
                                       FIELD_ERRORS_REF]},
}


def field_errors(description: str) -> fields.Field:
    return fields.Raw(metadata={"description": description, "allOf": [FIELD_ERRORS_REF]})


class ErrorDetailsSchema(Schema):
    """Field errors, by where they are."""

    json = field_errors("The body's fields (in a form's body too).")
    query = field_errors("The query string's parameters.")
    headers = field_errors("Headers (`Idempotency-Key`).")


class ErrorSchema(Schema):
    """Every error body: flask-smorest's form, with `message` always present."""

    code = fields.Integer(required=True, metadata={"description": "The HTTP status code."})
    status = fields.String(required=True, metadata={"description": "Its name."})
    message = fields.String(required=True, metadata={"description": "What went wrong."})
    errors = fields.Nested(ErrorDetailsSchema, metadata={"description": (
        "Field errors (422), by where they are, then by field, parameter or header, each a "
        "list of messages (a nested object or list: the same, by key or index).")})


def error_response(code: int, description: str, message: str, headers: dict | None = None,
                   **example) -> dict:
    """An error response of the OpenAPI document, with an example body."""
    example = {"code": code, "status": HTTP_STATUS_CODES[code], "message": message, **example}
    response = {"description": description, "schema": ErrorSchema, "example": example}
    return {**response, "headers": headers} if headers else response


def string_header(description: str) -> dict:
    return {"description": description, "schema": {"type": "string"}}


# The errors the operations document, by reference to their status's name (NOT_FOUND, ...).
ERROR_RESPONSES = [
    error_response(400, "The body is not JSON, or not a JSON object, or not a valid form of "
                        "its content type, or its chunked encoding is broken.",
                   "The body is not valid JSON."),
    error_response(401, "The API key is missing, unknown or revoked.",
                   "A valid API key is required in the Authorization header.",
                   {"WWW-Authenticate": string_header('`Token realm="messenger"`.')}),
    error_response(403, "The body names an organization that the key can't write to.",
                   "This API key can't write messages of another organization."),
    error_response(404, "No such message (another organization's messages are not found "
                        "either).", "No such message."),
    error_response(409, "A request with the same Idempotency-Key is still running: nothing "
                        "was applied; retry after `Retry-After` seconds.",
                   "A request with this Idempotency-Key is still running; retry shortly.",
                   {"Retry-After": string_header("Seconds to wait before retrying.")}),
    error_response(410, "The cursor is older than the events kept (EVENTS_RETENTION_DAYS, 7 "
                        "by default): list the messages again, then follow from the present.",
                   "This cursor is older than the events kept; list the messages again."),
    error_response(412, "`If-Match` no longer matches the message's ETag: nothing changed.",
                   "The message has changed since the ETag in If-Match."),
    error_response(413, "The body is over the size limit (MAX_BODY_BYTES, 1 MiB by default).",
                   "The data value transmitted exceeds the capacity limit."),
    error_response(415, "The body is neither JSON nor a form (`application/json`, "
                        "`application/x-www-form-urlencoded`, `multipart/form-data`).",
                   "The body must be application/json, application/x-www-form-urlencoded "
                   "or multipart/form-data."),
    error_response(422, "Fields, query parameters or the Idempotency-Key that are not valid "
                        "(or the key was used for another request), named in `errors`.",
                   "The request's fields or parameters are not valid: see errors.",
                   errors={"json": {"msg_type": ["Not a valid integer."]}}),
    error_response(503, "The database can't be reached or timed out: retry after "
                        "`Retry-After` seconds.",
                   "The database can't be reached just now; try again shortly.",
                   {"Retry-After": string_header("Seconds to wait before retrying.")}),
]


# A schema that takes null and nothing else: OpenAPI 3.0's `nullable` adds null to the `type`
# of its own schema only (3.0.3), so `allOf` of an object with `nullable` takes no null.
NULL = {"type": "object", "nullable": True, "enum": [None]}


def nullable_object(_converter, _field, ret: dict, **_kwargs) -> dict:
    """A nullable nested object as `{"anyOf": [its schema, NULL]}`, which client generators
    read as "that object or null". (apispec writes any object for NULL, which they turn into
    a second, shapeless type.)"""
    free_form = {"type": "object", "nullable": True}
    alternatives = ret.get("anyOf", [])
    if len(alternatives) == 2 and free_form in alternatives:
        return {"anyOf": [a for a in alternatives if a != free_form] + [NULL]}
    return {}


def empty_value_allowed(_converter, field, **_kwargs) -> dict:
    """`allowEmptyValue` for the query parameters of a schema that takes `?name=` for no
    parameter at all (EMPTY_IS_ABSENT)."""
    return {"allowEmptyValue": True} if getattr(field.parent, "EMPTY_IS_ABSENT", False) else {}


def configured_limits(config):
    """An apispec attribute function: each ConfiguredLength as `maxLength` (`maxItems` for a
    list) with its value in `config`, the app's."""

    def configured_limit(_converter, field, **_kwargs) -> dict:
        limits = [config[v.setting] for v in field.validators if isinstance(v, ConfiguredLength)]
        if not limits:
            return {}
        return {"maxItems" if isinstance(field, fields.List) else "maxLength": min(limits)}

    return configured_limit


class Api(flask_smorest.Api):
    """flask-smorest's Api; every error body also says in `message` what went wrong, and a
    405 keeps its `Allow` header. The OpenAPI document describes each error the operations
    give, and the limits of the app's configuration; Swagger UI at /docs is served from a
    package, with no CDN. One per app: its document is that app's."""

    ERROR_SCHEMA = ErrorSchema

    def init_app(self, app, **kwargs):
        # apispec merges each document it renders into these options: with one dict for
        # every app (Config's), the first document served would show through all others.
        app.config["API_SPEC_OPTIONS"] = deepcopy(app.config.get("API_SPEC_OPTIONS", {}))
        super().init_app(app, **kwargs)
        app.register_error_handler(OperationalError, self.database_unavailable)
        app.register_error_handler(PoolTimeout, self.database_unavailable)  # all connections busy

    def _init_spec(self, **kwargs):
        super()._init_spec(**kwargs)
        converter = self.ma_plugin.converter
        converter.add_attribute_function(nullable_object)
        converter.add_attribute_function(configured_limits(self.config))
        converter.add_parameter_attribute_function(empty_value_allowed)
        self.spec.components.schema("FieldErrors", FIELD_ERRORS)

    def _register_responses(self):
        super()._register_responses()
        for response in deepcopy(ERROR_RESPONSES):
            name = HTTPStatus(response["example"]["code"]).name
            prepare_response(response, self.spec, self.DEFAULT_RESPONSE_CONTENT_TYPE)
            self.spec.components.response(name, response, lazy=True)

    def _register_swagger_ui_rule(self, blueprint):
        super()._register_swagger_ui_rule(blueprint)
        blueprint.add_url_rule("/docs/assets/<path:filename>", endpoint="swagger_ui_assets",
                               view_func=swagger_ui_asset)

    def database_unavailable(self, error: OperationalError | PoolTimeout):
        """503, when the database can't be reached or gives up (connection refused or
        lost, timeouts, SQLite busy, no free connection in the pool); the details go to the
        log only."""
        log.error("Database unavailable: %s", getattr(error, "orig", error), exc_info=error)
        body, code, headers = self.handle_http_exception(ServiceUnavailable(
            "The database can't be reached just now; try again shortly."))
        return body, code, {**headers, "Retry-After": "1"}

    def handle_http_exception(self, error):
        payload, code, headers = super().handle_http_exception(error)
        message = payload.pop("message", None) or (
            "The request's fields or parameters are not valid: see errors."
            if code == 422
            else error.description
        )
        allow = {k: v for k, v in error.get_headers() if k == "Allow"}
        body = {"code": code, "status": payload["status"], "message": message, **payload}
        return body, code, {**allow, **(headers or {})}


def documented_errors(*codes: int):
    """Document the errors an operation can give (described in ERROR_RESPONSES) as
    flask-smorest's `alt_response` records them, but without its wrapper, which would run
    on every request (an operation gives up to eight errors)."""

    def document(view):
        apidoc = deepcopy(getattr(view, "_apidoc", {}))
        responses = apidoc.setdefault("response", {}).setdefault("responses", {})
        for code in codes:
            responses.setdefault(code, []).append(HTTPStatus(code).name)
        view._apidoc = apidoc
        return view

    return document


def swagger_ui_asset(filename: str):
    """Swagger UI's scripts and styles, from the swagger-ui-bundle package."""
    return send_from_directory(swagger_ui_path, filename)
