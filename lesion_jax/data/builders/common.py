"""Shared machinery of the builders that read hand-downloaded dermoscopy archives.

Every real-data builder (`isic2016`, `isic2017`, `isic2018`, `ph2`, `ham10000`) is a
`DermoscopyBuilder`: it only indexes its archive (`_index`: which image, mask and label belong to
which id and split) and the shared machinery does the rest, the same way for all of them:

* Features. `id` (Text, the official image id, also the example key), `image` (uint8 RGB), and
  when the config has them `mask` (single-channel PNG, values {0, 255}, same height and width as
  the image), `label` (the dataset's diagnosis classes) and `malignant` (benign / malignant). A
  config has a key only if every example of it has that data: a config without masks has no
  `mask` key at all, rather than a placeholder mask that would silently train a segmenter on
  empty targets (`pipeline` then fails with a KeyError on 'mask' for segmentation).
* Configs. `512` (default; long side at most 512 px, aspect kept, never enlarged) and `full`
  (native resolution: source JPEGs are stored byte for byte). Masks are resized by area
  averaging and thresholded at 0.5, to exactly the image's size.
* Validation. A missing folder or file of the archive raises `ManualDataError` naming the
  expected path and pointing at MANUAL_DOWNLOAD_INSTRUCTIONS (every incomplete split at once). A
  bad example (corrupt or non-RGB image, a JPEG damaged mid-stream, unreadable mask, mask size
  different from the image, a bad label row, a label row without its image, an image without its
  label or mask) fails preparation with its id and reason; with `skip_bad_examples=True` it is
  skipped instead, logged with its id and reason, counted, and recorded in the prepared
  dataset's `info.metadata`: "skipped_counts" (split → number) and "skipped_examples" (split →
  id → reason; under Beam older than 2.58, only the problems found before Beam ran, the others
  being in the workers' logs).
* One strict run reports everything. Some problems show while indexing the archive (missing
  files, label rows), others only when an image is decoded (a damaged JPEG, a mask of another
  size). Strict preparation (the default) raises neither kind at once: it reads every split,
  then fails with one `BadExamplesError` (a `BadExampleError`; `problems` = split → id → reason)
  listing every bad example of every split, so fixing the archive takes one run, not one per
  problem. Nothing is prepared then. In-process, a split with no good example at all stops
  the run early (TFDS refuses an empty split), and the error says which splits were not read;
  under Beam the pipeline's last step raises it, with the driver's indexing problems.
* A strict builder never serves data prepared with skips. The skip flag is not part of the
  config, so `isic2017/512` and `isic2017/512/skip_bad_examples=True` share one data folder.
  A strict builder (skip_bad_examples=False) that finds that folder prepared with examples
  skipped refuses both to reuse it (`download_and_prepare`) and to read it (`as_dataset`, what
  the experiments call) with `PreparedWithSkipsError` (a `ManualDataError`), naming the folder
  and how many examples are missing: ask for `skip_bad_examples=True` to use the data as it is,
  or delete the folder (or pass download_mode=REUSE_CACHE_IF_EXISTS) to prepare it again
  strictly. Refusing rather than preparing again in place keeps a deliberate skip-mode dataset
  from being deleted by a run that only forgot the flag. Data prepared with skips where none
  were needed serves strict requests.
* Apache Beam, for the big archives. Without Beam options examples are generated in-process.
  When the user passes a Beam runner or Beam options, `_generate_examples` returns a
  `beam.PTransform` instead (TFDS's own Beam support), so decoding, validation and resizing run
  on the Beam workers; the archive is only indexed on the driver. apache-beam is imported only
  then; it is not a dependency of this package. `pip install apache-beam`, then e.g.

    options = beam.options.pipeline_options.PipelineOptions([
        "--runner=DirectRunner", "--direct_num_workers=4",
        "--direct_running_mode=multi_processing"])  # or Dataflow, Flink, Spark options
    tfds.builder("isic2018/task1_full", data_dir=...).download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=..., beam_options=options))

  or `tfds build isic2018/task1_full --imports=lesion_jax.data.builders --manual_dir=...
  --beam_pipeline_options="runner=DirectRunner,direct_num_workers=4"` (the `tfds` command
  also needs its own extras, e.g. mlcroissant). Workers must be able to import lesion_jax.

The skip flag is a builder argument, not part of the config: it is a preparation policy and
reaches TFDS name strings, e.g. `tfds.builder("isic2017/512/skip_bad_examples=True")`.

The machinery is split by concern; this module re-exports all of it, so that builders (and
`from lesion_jax.data.builders import common`) reach it under one name:

* `errors`: ManualDataError, PreparedWithSkipsError, BadExampleError, BadExamplesError.
* `index`: finding the archive's files (folders, file-name patterns, label CSVs) → Record,
  Problem, SplitIndex per split.
* `images`: reading, checking, resizing and encoding one example's image and mask (LoadSpec,
  load_example).
* `generate`: making a split's examples in-process (`iter_examples`) or on Beam
  (`beam_examples`), skipping (SkipLog) or gathering every bad example into one error (BadLog,
  BeamChecks, bad_examples_error).
* `base`: DermoscopyBuilder, its configs (LesionConfig, size_configs), the refusal of data
  prepared with skips, and the constants several builders share.
"""
# pylint: disable=unused-import
from lesion_jax import io  # `common.io.ImageError`: what the image and mask readers raise
from lesion_jax.data.builders.base import (DEFAULT_MAX_SIZE, HAM10000_CITATION, HAM_CLASSES,
                                           HAM_MALIGNANT, DermoscopyBuilder, LesionConfig,
                                           size_configs)
from lesion_jax.data.builders.errors import (BadExampleError, BadExamplesError, ManualDataError,
                                             PreparedWithSkipsError)
from lesion_jax.data.builders.errors import _restore_error  # what pickled errors refer to
from lesion_jax.data.builders.generate import (BadLog, BeamChecks, SkipLog, bad_examples_error,
                                               beam_examples, iter_examples)
from lesion_jax.data.builders.images import (JPEG_QUALITY, LoadSpec, decode_image_file,
                                             encode_jpeg, is_plain_rgb_jpeg, load_example,
                                             read_mask, resize_image, resize_mask, target_size)
from lesion_jax.data.builders.index import (LabelTable, Problem, Record, SplitIndex,
                                            index_files, index_isic_part1, instructions_hint,
                                            manual_dir_of, match, present_splits, read_table,
                                            require, stable_fraction)
