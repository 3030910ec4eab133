"""The privacy policy as code: plain Python that imports neither Flask nor `app`.

Every path where personal data comes in (the age screen) or goes out (the
outbound-email seal) calls through this package, so a rule lives in one place.
"""

from privacy.policy import POLICY_VERSION, policy_text

__all__ = ["POLICY_VERSION", "policy_text"]
