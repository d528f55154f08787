"""mixnet-bids: MixNet brain-tissue segmentation as a BIDS-App."""

from setuptools import setup

VERSION = "0.1.0"

setup(
    name="mixnet-bids",
    version=VERSION,
    description="MixNet brain-tissue segmentation (GM/WM/CSF) as a BIDS-App",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=[
        "mixnet_bids",
        "mixnet_bids.cli",
        "mixnet_bids.data",
        "mixnet_bids.evaluation",
        "mixnet_bids.inference",
        "mixnet_bids.interfaces",
        "mixnet_bids.model",
        "mixnet_bids.training",
        "mixnet_bids.workflows",
    ],
    package_dir={"mixnet_bids.workflows": "workflows"},
    package_data={"mixnet_bids.data": ["*.json", "*.tsv", "weights/*.pt", "weights/*.json"]},
    install_requires=[
        "torch==2.13.0",
        "nipype>=1.9,<1.12",
        "pybids>=0.16",
        "nibabel>=5",
        "nilearn>=0.10",
        "templateflow>=24",
        "antspyx>=0.5",
        "numpy<2.4",
        "scipy<1.16",
        "scikit-image>=0.22",
        "pandas>=2",
        "filelock<3.30",
    ],
    extras_require={"test": ["pytest>=8"]},
    entry_points={
        "console_scripts": [
            "mixnet-bids=mixnet_bids.cli.run:main",
            "mixnet-bids-train=mixnet_bids.training.cli:main",
            "mixnet-bids-eval=mixnet_bids.evaluation.cli:main",
            "mixnet-bids-cv=mixnet_bids.training.crossval:main",
            "N4BiasFieldCorrection=mixnet_bids.ants_cli:n4",
            "antsRegistration=mixnet_bids.ants_cli:registration",
            "antsApplyTransforms=mixnet_bids.ants_cli:apply_transforms",
            "antsAffineInitializer=mixnet_bids.ants_cli:affine_initializer",
            "CreateJacobianDeterminantImage=mixnet_bids.ants_cli:jacobian",
        ]
    },
)
