"""A test double of Azure IoT Hub's service API for the ``iot_edge`` target, on 127.0.0.1
over TLS with a test CA, reached as a user reaches a hub: the connection string's
``HostName=localhost:PORT`` and ``REQUESTS_CA_BUNDLE`` (never by pointing an SDK client
elsewhere).

    from tests.doubles.iothub import IoTHubDouble
    with IoTHubDouble(tmp_path, docker_env=dev_env) as hub:
        hub.add_device("edge-01", tags={"environment": "prod"})
        env = hub.env()  # REQUESTS_CA_BUNDLE, IOTHUB_CONNECTION_STRING (DOCKER_HOST)
        hub.fail("PUT", r"^/configurations/", status=429, retry_after=1)
        hub.device_offline("edge-01")
        hub.reported("edge-01")["modules"]["diabetes"]["runtimeStatus"]

or the fixtures ``iothub`` (no Docker) and ``iothub_edge`` (the device runs its modules).

Modules: contract (the SDK's own service.json, with bravado-core), auth (SAS and bearer),
errors (IoT Hub's error bodies), conditions (target conditions), twins, hub (devices,
configurations, deployments at scale, applyConfigurationContent, direct methods), agent
(the simulated edge agent, running modules with deployer's iot_edge Engine), server (HTTP,
faults, records), fixtures (``IoTHubDouble``).
"""

from tests.doubles.iothub.fixtures import IoTHubDouble, iothub, iothub_edge

__all__ = ["IoTHubDouble", "iothub", "iothub_edge"]
