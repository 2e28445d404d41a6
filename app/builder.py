"""The typed application builder: `import_path: app.builder:build_app` in serve_config.yaml."""

from ray.serve import Application

from app.config import AppArgs
from app.ingress import Ingress
from app.model import Classifier
from app.postprocess import Postprocessor
from app.tokenizer import Tokenizer


def build_app(args: AppArgs) -> Application:
    model = args.model
    return Ingress.bind(
        Tokenizer.bind(model), Classifier.bind(model), Postprocessor.bind(model), args.model_dump()
    )
