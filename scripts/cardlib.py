"""Helpers shared by the model cards (scripts/model_card.py, scripts/spam_card.py)."""
import math


def params(cfg, labels):
    """Parameters of a BERT classifier from its config.json: (all, embeddings)."""
    h, i = cfg["hidden_size"], cfg["intermediate_size"]
    emb = (cfg["vocab_size"] + cfg["max_position_embeddings"] + cfg["type_vocab_size"]) * h + 2 * h
    layer = 4 * (h * h + h) + 2 * h + (h * i + i) + (i * h + h) + 2 * h
    return emb + cfg["num_hidden_layers"] * layer + (h * h + h) + (labels * h + labels), emb


def wilson(acc, n):
    """Half-width, in points, of the 95% Wilson interval of a share `acc` of `n`."""
    z = 1.96
    d = 1 + z * z / n
    return z * math.sqrt(acc * (1 - acc) / n + z * z / (4 * n * n)) / d * 100
