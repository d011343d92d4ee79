from torchvision.models import resnet, vision_transformer  # noqa: F401
