"""atomgrad's `train/` bench names beside the names the PyTorch references print for the same
step (the method is "cross-entropy" in one and "ce" in the other), for the comparison tables of
benches/cpu.sh and benches/compiled.sh."""

PAIRS = [
    ("synthetic MLP cross-entropy batch 64", "synthetic MLP cross-entropy batch 64"),
    ("synthetic MLP atom batch 64", "synthetic MLP atom batch 64"),
    ("fashion CNN cross-entropy batch 128", "fashion CNN ce batch 128"),
    ("fashion CNN atom batch 128", "fashion CNN atom batch 128"),
    ("DCGAN G+D plain batch 64", "DCGAN G+D plain batch 64"),
    ("sentiment Transformer batch 64", "sentiment Transformer batch 64"),
    ("fashion ResNet cross-entropy batch 128", "fashion ResNet ce batch 128"),
    ("fashion ResNet atom batch 128", "fashion ResNet atom batch 128"),
    ("sentiment Transformer base batch 64", "sentiment Transformer base batch 64"),
    ("DCGAN base G+D plain batch 128", "DCGAN base G+D batch 128"),
    ("PacGAN 2-D G+D plain batch 100", "PacGAN 2-D G+D batch 100"),
]
