"""Per-image PIL transforms for file-backed datasets; output stays uint8 (normalisation is done on the device)."""

from torchvision import transforms as T

from datasets.base import PILTransform


def train_transform(image_size: int) -> PILTransform:
    """RandomResizedCrop + horizontal flip, to a uint8 [3,image_size,image_size] tensor."""
    return T.Compose([
        T.RandomResizedCrop(image_size),
        T.RandomHorizontalFlip(),
        T.PILToTensor(),
    ])


def eval_transform(image_size: int) -> PILTransform:
    """Resize the short side to image_size*256/224, centre-crop image_size, to a uint8 tensor."""
    return T.Compose([
        T.Resize(int(image_size * 256 / 224)),
        T.CenterCrop(image_size),
        T.PILToTensor(),
    ])
