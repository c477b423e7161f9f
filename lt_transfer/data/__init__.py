"""Data modules and the offline data sets they are built on."""

from lt_transfer.data.digits import DigitsDataModule, TransformedImages, few_labels
from lt_transfer.data.domain_adaptation import DomainAdaptationDataModule, combined_train_loader
from lt_transfer.data.fashion_mnist import FashionMNISTDataModule, load_fashion_mnist, read_idx
from lt_transfer.data.image_dataset import BadImageError, ImageFileDataset, find_bad_images, load_image
from lt_transfer.data.image_files import LabelledImages, find_labelled_images, list_images
from lt_transfer.data.image_folder import ImageFolderDataModule
from lt_transfer.data.image_transforms import PhotoAugment, eval_transform, train_transform
from lt_transfer.data.mnist_m import blend_with_photos, load_mnist_m
from lt_transfer.data.sources import (
    ImageSplit,
    ImageSplits,
    load_mnist,
    load_sklearn_digits,
    package_path,
)
from lt_transfer.data.text import TextClassificationDataModule, TextSplit
from lt_transfer.data.transforms import image_transform
from lt_transfer.data.tweets import (
    TweetSentimentDataModule,
    TweetShiftDataModule,
    load_tweet_sentiment,
    tweet_splits,
)

__all__ = [
    "BadImageError",
    "DigitsDataModule",
    "DomainAdaptationDataModule",
    "FashionMNISTDataModule",
    "ImageFileDataset",
    "ImageFolderDataModule",
    "ImageSplit",
    "ImageSplits",
    "LabelledImages",
    "PhotoAugment",
    "TextClassificationDataModule",
    "TextSplit",
    "TransformedImages",
    "TweetSentimentDataModule",
    "TweetShiftDataModule",
    "blend_with_photos",
    "combined_train_loader",
    "eval_transform",
    "few_labels",
    "find_bad_images",
    "find_labelled_images",
    "image_transform",
    "list_images",
    "load_fashion_mnist",
    "load_image",
    "load_mnist",
    "load_mnist_m",
    "load_sklearn_digits",
    "load_tweet_sentiment",
    "package_path",
    "read_idx",
    "train_transform",
    "tweet_splits",
]
