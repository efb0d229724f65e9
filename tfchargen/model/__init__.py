"""The numeric model: CharRNN (embedding or one-hot, stacked LSTM/GRU, dense logits) and the fused LSTM kernel.
May import: config."""
