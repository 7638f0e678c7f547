"""What several test files share: the fault-injecting S3 proxy (s3_proxy), putting frames into a bucket
(frames), a tiny training run's config, flags and what it left in the bucket (runs), and a flow run's
task states and retry (flow_runs)."""
