"""TF Serving's APIs: `tfchargen serve` (transport, REST, gRPC, versions, batching, :stream) and its clients.
May import: contract, common, generation.streaming, savedmodel (the clients import no TensorFlow)."""
