"""Public name of the TF Serving clients (REST and gRPC): see tfchargen.serving.client."""

from tfchargen.contract import Controls
from tfchargen.serving.client import GrpcClient, RestClient, ServingError, connect

__all__ = ["Controls", "GrpcClient", "RestClient", "ServingError", "connect"]
