"""Copies wit/, the bundled guest and the bundled model into the package when building a
wheel, so an installed wasinn can build and run its classifier without the repo.
(Everything else is in pyproject.toml.)"""
import pathlib
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = pathlib.Path(__file__).resolve().parent
SHIPPED = ("wit", "guest/classifier", "guest/classify-cli", "models/efficientnet-lite0")  # what wasinn.resources.path finds in a wheel


class BuildWithData(build_py):
    def run(self):
        super().run()
        for rel in SHIPPED:
            dest = pathlib.Path(self.build_lib) / "wasinn" / "_data" / rel
            shutil.rmtree(dest, ignore_errors=True)
            shutil.copytree(ROOT / rel, dest, ignore=shutil.ignore_patterns("__pycache__"))


setup(cmdclass={"build_py": BuildWithData})
