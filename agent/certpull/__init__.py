"""certpull: keep Apache httpd's TLS certificates equal to AWS Secrets Manager secrets."""

__version__ = "0.1.0"
