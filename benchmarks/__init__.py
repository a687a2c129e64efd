"""Load benchmarks of sipgw against Janus' SIP plugin (not part of the test suite)."""
