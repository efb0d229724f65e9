"""The numeric model: CharRNN (one-hot or embedding, stacked LSTM/GRU, dense logits) and the fused LSTM kernel.
May import: config."""
