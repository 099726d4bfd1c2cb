"""The Secrets Manager rotation function that issues the certificates certpull installs.

It runs in AWS Lambda with only boto3 and cryptography, so this package imports nothing from
certpull but ``errors`` and the pure ``bundle`` validation (the Lambda zip holds just those).
Entry point: ``certpull.rotation.handler.lambda_handler``.
"""
