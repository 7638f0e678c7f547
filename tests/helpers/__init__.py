"""What several test files share: the fault-injecting S3 proxy and putting frames into a bucket."""
