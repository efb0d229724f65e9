"""Text out: sampling strategies, per-row seeds, the in-graph generator, stream states and chunked streams.
May import: contract, common, data, model."""
