"""The fault suite: each test reproduces a finding of the failure-path audit (issue 13)
and asserts what a user relies on afterwards."""
