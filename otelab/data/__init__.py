"""Data: edit requests and their validation, the reference-data loaders, text corpora."""
from otelab.data.requests import EditRequest, RequestError
from otelab.data.records import DataError, FactRecord, ZsreRecord
from otelab.data.loaders import load_counterfact, load_factbank, load_glue, load_probes, load_zsre
from otelab.data.corpus import Corpus, get_corpus
from otelab.data.texts import held_out_texts

__all__ = [
    "EditRequest", "RequestError", "DataError", "FactRecord", "ZsreRecord", "load_counterfact", "load_factbank",
    "load_glue", "load_probes", "load_zsre", "Corpus", "get_corpus", "held_out_texts",
]
