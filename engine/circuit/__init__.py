"""The circuit toolkit: labelled datasets, streamed activation collection, geometry (PCA, probes,
UMAP, k-means), direction extraction, plots, and probe batteries ("stratigraphy").

Modules: ``dataset`` (builders, schema, validation), ``collect`` (batched, sharded, resumable
``.safetensors`` collection), ``activations`` (reading collected files), ``geometry``
(analyze), ``directions``, ``visualize`` (PNG + plotext), ``probes`` (built-in batteries),
``models`` (request/result models).
"""
