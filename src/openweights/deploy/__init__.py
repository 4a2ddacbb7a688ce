"""What a production stack needs beyond the services: its secrets, its S3 bucket.

``python -m openweights.deploy secrets DIR`` writes every secret ``compose.yaml`` reads;
``python -m openweights.deploy bucket`` creates the file store's bucket (compose's
one-shot ``s3-bucket`` service). See ``docs/deploy.md``.
"""
