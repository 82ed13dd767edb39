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
    "mobilenet_v2": """
model = "real_models:mobilenet_v2"
outputs = ["last_hidden_state", "pooler_output"]
[[inputs]]
name = "pixel_values"
shape = ["batch", 3, 64, 64]
range = [-2.0, 2.0]
dims = { batch = [1, 8] }
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
    "llama": """
model = "real_models:llama"
outputs = ["last_hidden_state"]
[[inputs]]
name = "input_ids"
shape = ["batch", "sequence"]
dtype = "int64"
range = [1, 99]
dims = { batch = [1, 4], sequence = [2, 16] }
pad = { value = 0 }
[[inputs]]
name = "attention_mask"
shape = ["batch", "sequence"]
dtype = "int64"
mask = { padding = "both", min_valid = 1 }
[padded_outputs]
last_hidden_state = { by = "attention_mask", axis = 1 }
""",
    "t5_encoder": """
model = "real_models:t5_encoder"
outputs = ["last_hidden_state"]
[[inputs]]
name = "input_ids"
shape = ["batch", "sequence"]
dtype = "int64"
range = [1, 99]
dims = { batch = [1, 4], sequence = [2, 24] }
pad = { value = 0 }
[[inputs]]
name = "attention_mask"
shape = ["batch", "sequence"]
dtype = "int64"
mask = { padding = "right" }
[padded_outputs]
last_hidden_state = { by = "attention_mask", axis = 1 }
""",
    "clip_vision": """
model = "real_models:clip_vision"
outputs = ["last_hidden_state", "pooler_output"]
[[inputs]]
name = "pixel_values"
shape = ["batch", 3, 32, 32]
range = [-2.1, 2.6]
dims = { batch = [1, 4] }
""",
    "lengths_encoder": """
model = "real_models:lengths_encoder"
outputs = ["per_step", "pooled"]
[[inputs]]
name = "frames"
shape = ["batch", "time", 8]
range = [-1.0, 1.0]
dims = { batch = [1, 4], time = [2, 24] }
[[inputs]]
name = "lengths"
shape = ["batch"]
dtype = "int64"
lengths = { dim = "time" }
[padded_outputs]
per_step = { by = "lengths", axis = 1 }
""",
    "attention_pooling": """
model = "real_models:attention_pooling"
outputs = ["pooled"]
[[inputs]]
name = "tokens"
shape = ["batch", "sequence", 16]
range = [-1.0, 1.0]
dims = { batch = [1, 4], sequence = [1, 20] }
[[inputs]]
name = "padding"
shape = ["batch", "sequence"]
dtype = "bool"
mask = { marks = "padding", padding = "right" }
""",
    "frame_encoder": """
model = "real_models:frame_encoder"
outputs = ["per_frame", "pooled"]
[[inputs]]
name = "frames"
shape = ["batch", "time", 64]
range = [-1.0, 1.0]
dims = { batch = [1, 4], time = [2, 16] }
""",
    # The TorchScript exporter fixes nn.MultiheadAttention's sequence length at its trace size; with
    # a fixed length (padded batches of one size, as many serving stacks send) it exports.
    "lengths_encoder_fixed_time": """
model = "real_models:lengths_encoder"
outputs = ["per_step", "pooled"]
[[inputs]]
name = "frames"
shape = ["batch", "time", 8]
range = [-1.0, 1.0]
dims = { batch = [1, 4], time = [12, 12] }
[[inputs]]
name = "lengths"
shape = ["batch"]
dtype = "int64"
lengths = { dim = "time" }
[padded_outputs]
per_step = { by = "lengths", axis = 1 }
""",
    "attention_pooling_fixed_length": """
model = "real_models:attention_pooling"
outputs = ["pooled"]
[[inputs]]
name = "tokens"
shape = ["batch", "sequence", 16]
range = [-1.0, 1.0]
dims = { batch = [1, 4], sequence = [12, 12] }
[[inputs]]
name = "padding"
shape = ["batch", "sequence"]
dtype = "bool"
mask = { marks = "padding", padding = "right" }
""",
}
