"""Test suites every implementation of an altus plug-in boundary must pass.

A backend's test module only supplies fixtures and inherits the suite, as in
fsspec's ``tests/abstract``::

    from abstract.batch import BatchBackendSuite

    class TestSlurm(BatchBackendSuite):
        ...  # fixtures backend_name, knot_options, store_url
"""
