"""The networks convlens trains:

    resnet.py  one ResNet definition (basic or bottleneck blocks, CIFAR or ImageNet stem) for every
               variant, build_model from a spec's model section, torchvision-format weights
"""
