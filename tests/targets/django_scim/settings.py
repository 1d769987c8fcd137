"""Settings of the minimal Django project serving django-scim2 for the SCIM target tests.

The database is SQLite in the folder the suite names (`SCIM_TEST_DB`); the bearer token
comes from `SCIM_TEST_TOKEN`; `SCIM_TEST_NETLOC` is the host:port the `$ref` and `location`
URLs name.
"""

from __future__ import annotations

import os

SECRET_KEY = "orgsync-test-provider-not-a-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
USE_TZ = True
ROOT_URLCONF = "tests.targets.django_scim.urls"
INSTALLED_APPS = ["django_scim", "tests.targets.django_scim.scimapp"]
MIDDLEWARE = ["tests.targets.django_scim.scimapp.auth.BearerTokenMiddleware"]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("SCIM_TEST_DB", ":memory:"),
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
LOGGING_CONFIG = None
SCIM_SERVICE_PROVIDER = {
    "NETLOC": os.environ.get("SCIM_TEST_NETLOC", "127.0.0.1"),
    "SCHEME": "http",
    "USER_MODEL_GETTER": "tests.targets.django_scim.scimapp.models.user_model",
    "GROUP_MODEL": "tests.targets.django_scim.scimapp.models.ScimGroup",
    "AUTHENTICATION_SCHEMES": [
        {
            "type": "oauthbearertoken",
            "name": "OAuth Bearer Token",
            "description": "a bearer token in the Authorization header",
        }
    ],
}
