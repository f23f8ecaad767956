from tandem.settings import Settings, parse_settings


def test_defaults_when_nothing_given():
    s, errors = parse_settings(None)
    assert s == Settings() and errors == []


def test_valid_values_are_taken():
    s, errors = parse_settings({"enable": False, "device": "cpu", "maxTokensSingleLine": 10,
                                "prefixShare": 0.5, "modelPath": "/m"})
    assert errors == []
    assert (s.enable, s.device, s.maxTokensSingleLine, s.prefixShare, s.modelPath) == (False, "cpu", 10, 0.5, "/m")


def test_bad_values_give_a_message_and_the_default():
    s, errors = parse_settings({"device": "tpu", "maxTokensMultiLine": -3, "contextTokens": "lots",
                                "enable": "yes", "prefixShare": 2})
    assert s == Settings()
    assert len(errors) == 5
    assert any("tandem.device" in e and "auto, cuda, cpu" in e for e in errors)
    assert any("tandem.maxTokensMultiLine" in e and "1 to 1024" in e for e in errors)


def test_not_an_object():
    s, errors = parse_settings(["x"])
    assert s == Settings() and "must be an object" in errors[0]


def test_unknown_keys_and_nulls_are_ignored():
    s, errors = parse_settings({"python": "/usr/bin/python3", "device": None})
    assert s == Settings() and errors == []


def test_restart_needed_only_for_model_and_device():
    base = Settings()
    assert base.restart_needed(parse_settings({"device": "cpu"})[0])
    assert base.restart_needed(parse_settings({"modelPath": "/x"})[0])
    assert not base.restart_needed(parse_settings({"maxTokensSingleLine": 5})[0])


def test_backend_settings():
    s, errors = parse_settings({"backend": "openai", "endpoint": "https://gpu:8000/v1", "apiModel": "m",
                                "apiKeyEnv": "TANDEM_TEAM_KEY"})
    assert errors == [] and (s.backend, s.endpoint, s.apiModel, s.apiKeyEnv) == ("openai", "https://gpu:8000/v1", "m",
                                                                                 "TANDEM_TEAM_KEY")
    assert Settings().backend == "local" and Settings().endpoint == ""  # nothing is sent by default
    s, errors = parse_settings({"backend": "cloud", "endpoint": "gpu:8000", "apiKeyEnv": "AWS_SECRET_ACCESS_KEY"})
    assert (s.backend, s.endpoint, s.apiKeyEnv) == ("local", "", "TANDEM_API_KEY") and len(errors) == 3
    assert any("http:// or https://" in e for e in errors)
    for key, value in (("backend", "openai"), ("endpoint", "http://x"), ("apiModel", "m"), ("apiKeyEnv", "TANDEM_TEAM_KEY")):
        assert Settings().restart_needed(parse_settings({key: value})[0]), key
