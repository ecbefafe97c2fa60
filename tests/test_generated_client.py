"""A Python client generated from /openapi.json by openapi-python-client (the generator
must take the document without a warning) creates, reads, lists, patches and deletes
messages on a running gunicorn. Its `Message` (a response) has every key; its
`MessageInput` (a body) none required."""
import importlib
import inspect
import subprocess
import sys

import pytest

from helpers import make_key

CONFIG = """
package_name_override: messenger_client
post_hooks: []  # no formatting of the generated code: it is only imported
"""


def generate_client(base: str, directory):
    config = directory / "config.yml"
    config.write_text(CONFIG)
    subprocess.run(
        [sys.executable, "-m", "openapi_python_client", "generate", "--url",
         f"{base}/openapi.json", "--meta", "none", "--config", str(config),
         "--output-path", str(directory / "messenger_client"), "--fail-on-warning"],
        check=True, capture_output=True, text=True, timeout=120)
    sys.path.insert(0, str(directory))
    try:
        return importlib.import_module("messenger_client")
    finally:
        sys.path.remove(str(directory))


@pytest.fixture(scope="module")
def generated(service, tmp_path_factory):
    return generate_client(service.base, tmp_path_factory.mktemp("client"))


def test_a_generated_client_does_every_operation(service, generated):
    base = service.base
    from messenger_client.api.sms import (  # generated just now
        create_message, delete_message, list_messages, partial_update_message, read_message,
    )
    from messenger_client.models import Error, KeyValueInput, Message, MessageInput

    key = make_key(service.app, "acme")["Authorization"].split()[1]
    client = generated.AuthenticatedClient(base_url=base, token=key, prefix="Token")

    created = create_message.sync_detailed(client=client, body=MessageInput(
        ref_id="generated", attachment_ids=["a-1"],
        sms_data=KeyValueInput(keys="to", values="+15550100")))
    message = created.parsed
    assert created.status_code == 201 and isinstance(message, Message)
    assert created.headers["Location"].endswith(f"/{message.id}/")
    assert (message.organization, message.sms_data.values) == ("acme", "+15550100")

    read = read_message.sync(client=client, message_id=message.id)
    assert read.to_dict() == message.to_dict()

    listed = list_messages.sync_detailed(client=client, ref_id="generated", page_size=10)
    assert [m.id for m in listed.parsed] == [message.id]
    assert '"total": 1' in listed.headers["X-Pagination"]

    patched = partial_update_message.sync_detailed(
        client=client, message_id=message.id, if_match=created.headers["ETag"],
        body=MessageInput(ref_id="patched", sms_data=None))
    assert patched.status_code == 200
    assert (patched.parsed.ref_id, patched.parsed.sms_data) == ("patched", None)
    assert patched.parsed.attachment_ids == ["a-1"]

    stale = partial_update_message.sync_detailed(
        client=client, message_id=message.id, if_match=created.headers["ETag"],
        body=MessageInput())
    assert stale.status_code == 412 and isinstance(stale.parsed, Error)

    deleted = delete_message.sync_detailed(client=client, message_id=message.id)
    gone = read_message.sync_detailed(client=client, message_id=message.id)
    assert deleted.status_code == 204
    assert gone.status_code == 404 and gone.parsed.message == "No such message."


def required_arguments(model) -> set[str]:
    return {name for name, parameter in inspect.signature(model).parameters.items()
            if parameter.default is inspect.Parameter.empty and name != "self"}


def test_a_generated_message_has_every_key_and_a_body_none_required(generated):
    from messenger_client.models import KeyValue, KeyValueInput, Message, MessageInput

    assert required_arguments(Message) == set(Message.__annotations__) - {
        "additional_properties"}
    assert len(required_arguments(Message)) == 27
    assert required_arguments(KeyValue) == {"keys", "values", "queryparam"}
    assert required_arguments(MessageInput) == required_arguments(KeyValueInput) == set()
