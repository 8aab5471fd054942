"""Training data: text documents -> tokens -> packed fixed-length windows -> batches."""
