"""orgsync keeps SaaS organizations in step with a company's identity provider."""

__version__ = "0.1.0"
