"""Data modules and the offline data sets they are built on (images, text, time series)."""

from lt_transfer.data.aeon_data import (
    FORECASTING_SETS,
    aeon_data_folder,
    load_forecasting,
    load_ucr,
    ucr_names,
)
from lt_transfer.data.digits import DigitsDataModule, TransformedImages, few_labels
from lt_transfer.data.domain_adaptation import DomainAdaptationDataModule, combined_train_loader
from lt_transfer.data.fashion_mnist import FashionMNISTDataModule, load_fashion_mnist, read_idx
from lt_transfer.data.forecast_windows import FORECAST_BATCH_KEYS, ForecastWindows, cut_windows
from lt_transfer.data.forecasting import SEASONALITY, ForecastingDataModule, read_series_collection
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
from lt_transfer.data.time_series import TimeSeriesClassificationDataModule, read_labelled_series
from lt_transfer.data.transforms import image_transform
from lt_transfer.data.ts_formats import (
    LabelledSeries,
    SeriesCollection,
    read_labelled_csv,
    read_series_csv,
    read_ts,
    read_tsf,
)
from lt_transfer.data.ts_preprocessing import fill_missing, fit_length, stack_series, z_normalize
from lt_transfer.data.tweets import (
    TweetSentimentDataModule,
    TweetShiftDataModule,
    load_tweet_sentiment,
    tweet_splits,
)

__all__ = [
    "FORECASTING_SETS",
    "FORECAST_BATCH_KEYS",
    "SEASONALITY",
    "BadImageError",
    "DigitsDataModule",
    "DomainAdaptationDataModule",
    "FashionMNISTDataModule",
    "ForecastWindows",
    "ForecastingDataModule",
    "ImageFileDataset",
    "ImageFolderDataModule",
    "ImageSplit",
    "ImageSplits",
    "LabelledImages",
    "LabelledSeries",
    "PhotoAugment",
    "SeriesCollection",
    "TextClassificationDataModule",
    "TextSplit",
    "TimeSeriesClassificationDataModule",
    "TransformedImages",
    "TweetSentimentDataModule",
    "TweetShiftDataModule",
    "aeon_data_folder",
    "blend_with_photos",
    "combined_train_loader",
    "cut_windows",
    "eval_transform",
    "few_labels",
    "fill_missing",
    "find_bad_images",
    "find_labelled_images",
    "fit_length",
    "image_transform",
    "list_images",
    "load_fashion_mnist",
    "load_forecasting",
    "load_image",
    "load_mnist",
    "load_mnist_m",
    "load_sklearn_digits",
    "load_tweet_sentiment",
    "load_ucr",
    "package_path",
    "read_idx",
    "read_labelled_csv",
    "read_labelled_series",
    "read_series_collection",
    "read_series_csv",
    "read_ts",
    "read_tsf",
    "stack_series",
    "train_transform",
    "tweet_splits",
    "ucr_names",
    "z_normalize",
]
