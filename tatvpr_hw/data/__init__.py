"""Data sets: GSV-Cities training places, VPR evaluation sets, the built-in synthetic benchmark.

- :mod:`tatvpr_hw.data.gsv` -- ``GSVCitiesDataset``, ``make_train_loader`` (P x K batches)
- :mod:`tatvpr_hw.data.vpr` -- ``VPREvalSet`` (database, queries, positives within a radius)
- :mod:`tatvpr_hw.data.synthetic` -- ``write_benchmark``, ``ensure_benchmark``
- :mod:`tatvpr_hw.data.transforms` -- loading and ImageNet preprocessing
"""
