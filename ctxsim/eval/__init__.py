"""Evaluation: embedding extraction, exact k-NN (faiss or chunked torch), Recall@K, MAP@R, R-precision
(reference-implementation §5)."""

from ctxsim.eval.evaluate import evaluate_bundle
from ctxsim.eval.extract import extract_embeddings
from ctxsim.eval.knn import BACKENDS, faiss_available, faiss_gpu_available, knn_search
from ctxsim.eval.metrics import LONE_QUERY_MODES, query_stats, relevant_counts, retrieval_metrics, retrieval_results
from ctxsim.eval.per_query import PER_QUERY_NAME, PerQuery, load_per_query, save_per_query

__all__ = [
    "BACKENDS", "LONE_QUERY_MODES", "evaluate_bundle", "extract_embeddings", "faiss_available", "faiss_gpu_available",
    "knn_search", "query_stats", "relevant_counts", "retrieval_metrics", "retrieval_results",
    "PER_QUERY_NAME", "PerQuery", "load_per_query", "save_per_query",
]
