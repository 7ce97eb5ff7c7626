"""Bring your own data: EEG recordings, BOLD + atlases, BIDS datasets in; BIDS-derivatives out.

* :mod:`.eeg_in` – any recording MNE reads (EDF/BDF, BrainVision, EEGLAB, FIF, NEDF) or a BIDS
  dataset via mne-bids → fitting targets (spectra, band powers, alpha peak, gamma, sensor FC).
* :mod:`.fmri_in` – 4D BOLD NIfTI + atlas (nilearn) → region time series and empirical FC;
  atlas ↔ connectome region matching by label or centroid.
* :mod:`.derivatives` – simulations, metrics and twins written as BIDS-derivatives, and a
  validator for the folder.
* :mod:`.files` – input checks and writes that never overwrite or half-write a file.

Connectome files (CSV/TSV/.npy, MRtrix, TVB zips) load with
:meth:`neurotwin_dash.connectome.Connectome.from_files`.

For a dashboard: ``paths = save_uploads({name: bytes, ...})`` then
``eeg_in.import_eeg(paths[0])`` / ``fmri_in.import_fmri(bold, atlas)``; every function takes and
returns plain paths and ``xarray.Dataset`` objects.
"""
from .files import DataImportError, OutputExistsError, check_input, save_uploads, write_new

__all__ = ["DataImportError", "OutputExistsError", "check_input", "save_uploads", "write_new"]
