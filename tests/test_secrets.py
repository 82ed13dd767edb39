from harness.core.secrets import redact


def test_the_userinfo_of_a_uri_is_redacted_even_when_the_password_holds_an_at_sign():
    text = redact("tracking at http://gate-user:p@ss@127.0.0.1:5000/api and s3://bucket/key")
    assert text == "tracking at http://***@127.0.0.1:5000/api and s3://bucket/key"
    assert "ss@" not in text
