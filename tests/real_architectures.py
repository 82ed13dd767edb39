"""Gate configs for the real architectures in tests/real_models.py, as a user would write them."""

CONFIGS = {
    "bert": """
model = "real_models:bert"
outputs = ["last_hidden_state", "pooler_output"]
[[inputs]]
name = "input_ids"
shape = ["batch", "sequence"]
dtype = "int64"
range = [0, 99]
dims = { batch = [1, 4], sequence = [4, 32] }
[[inputs]]
name = "attention_mask"
shape = ["batch", "sequence"]
dtype = "int64"
range = [0, 1]
""",
    "vit": """
model = "real_models:vit"
outputs = ["last_hidden_state", "pooler_output"]
[[inputs]]
name = "pixel_values"
shape = ["batch", 3, 32, 32]
range = [-2.0, 2.0]
dims = { batch = [1, 4] }
""",
    "resnet": """
model = "real_models:resnet"
outputs = ["last_hidden_state", "pooler_output"]
[[inputs]]
name = "pixel_values"
shape = ["batch", 3, 32, 32]
range = [-2.0, 2.0]
dims = { batch = [1, 4] }
""",
    "convnext": """
model = "real_models:convnext"
outputs = ["last_hidden_state", "pooler_output"]
[[inputs]]
name = "pixel_values"
shape = ["batch", 3, 32, 32]
range = [-2.0, 2.0]
dims = { batch = [1, 4] }
""",
    "wav2vec2": """
model = "real_models:wav2vec2"
outputs = ["last_hidden_state"]
[[inputs]]
name = "input_values"
shape = ["batch", "samples"]
range = [-1.0, 1.0]
dims = { batch = [1, 3], samples = [400, 1200] }
""",
    "lstm": """
model = "real_models:lstm"
outputs = ["per_step", "final"]
[[inputs]]
name = "features"
shape = ["batch", "time", 8]
range = [-1.0, 1.0]
dims = { batch = [1, 4], time = [2, 24] }
""",
}
