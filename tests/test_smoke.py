"""The app starts, answers its health check and serves its public pages."""


def test_healthz_reports_database(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "database": "ok"}


def test_public_pages_render(client):
    for path in ("/", "/signup", "/privacy", "/staff/login"):
        response = client.get(path)
        assert response.status_code == 200, path
        assert b"<main" in response.data
