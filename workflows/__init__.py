"""The Nipype workflows of mixnet-bids.

This folder sits at the top of the repository but installs as the package
``mixnet_bids.workflows`` (``package_dir`` in ``setup.py``): import it under that name,
never as ``workflows``. Each factory (``init_*_wf``) returns a workflow with an
``inputnode`` and an ``outputnode``.
"""
