"""Data governance: the toxic-flow session rule, tenant isolation of results and the sinks each
data class may reach. Pure rules here; the pipeline stages in :mod:`portcullis.pipeline.stages.govern`."""
