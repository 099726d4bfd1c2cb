"""aws.AwsClients without the network: what clients share (creating a client makes no call)."""

from __future__ import annotations

from typing import Any, List

import botocore.session
from botocore.loaders import Loader

from certpull.aws import AwsClients

ROLE = "arn:aws:iam::111122223333:role/certpull-reader"


class CountingLoader(Loader):  # type: ignore[misc]
    """botocore's loader, noting every service model asked of it."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: List[str] = []

    def load_service_model(self, service_name: str, type_name: str, api_version: Any = None) -> Any:
        self.asked.append(f"{service_name}/{type_name}")
        return super().load_service_model(service_name, type_name, api_version)


def session_with(loader: CountingLoader) -> botocore.session.Session:
    session = botocore.session.get_session()
    session.set_credentials("AKIDEXAMPLE", "secret")
    session.register_component("data_loader", loader)
    return session


def test_an_assumed_roles_clients_are_built_from_the_shared_loader() -> None:
    loader = CountingLoader()
    clients = AwsClients(endpoint_url="http://127.0.0.1:9", session=session_with(loader))
    clients.secretsmanager("us-east-1")
    own = loader.asked.count("secretsmanager/service-2")
    clients.secretsmanager("us-east-1", ROLE, "fleet-7")
    clients.secretsmanager("us-east-1", ROLE)
    assert loader.asked.count("secretsmanager/service-2") == own + 2  # no loader of their own


def test_the_agents_and_the_queues_clients_share_one_session() -> None:
    # wiring.build_daemon hands one session to both AwsClients.
    loader = CountingLoader()
    session = session_with(loader)
    agent, queue = AwsClients(session=session), AwsClients(session=session)
    agent.secretsmanager("eu-west-1")
    queue.sqs("eu-west-1")
    assert {"secretsmanager/service-2", "sqs/service-2"} <= set(loader.asked)


def test_clients_are_cached_per_service_region_and_role() -> None:
    clients = AwsClients(session=session_with(CountingLoader()))
    assert clients.secretsmanager("us-east-1") is clients.secretsmanager("us-east-1")
    assert clients.secretsmanager("us-east-1") is not clients.secretsmanager("us-east-1", ROLE)
    assert clients.sqs("us-east-1") is clients.sqs("us-east-1")
