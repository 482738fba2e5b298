"""report.html (stub)."""


def write_report(result, folder, clip):
    raise NotImplementedError
