# TEMPORARY (lead): placeholder until the classifier helper writes this module. Replace freely.
from gateway.classify.base import LengthScorer


class ClassifierLoadError(Exception):
    pass


def load_scorer(kind="onnx", path=None):
    s = LengthScorer()
    s.default_threshold = 0.5
    return s


class MicroBatcher:
    def __init__(self, scorer, max_batch=32, max_wait_s=0.0005):
        self.scorer = scorer

    async def score(self, text):
        return self.scorer.score_batch([text])[0]
