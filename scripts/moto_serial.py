"""moto's server, answering one request at a time.

moto keeps no lock around a table: two conditional PutItems that arrive together can both
pass their condition (measured: two winners in 2 of 199 rounds of 8 racing writers with both
cores loaded). DynamoDB applies each conditional write atomically, and the service's tests rely
on that, so the emulator is served one request at a time. Usage: moto_serial.py HOST PORT
"""

import sys
import threading

from moto.server import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import run_simple

app = DomainDispatcherApplication(create_backend_app)
lock = threading.Lock()


def serial(environ, start_response):
    with lock:
        # The whole body is produced under the lock: moto works while it is iterated.
        return list(app(environ, start_response))


run_simple(sys.argv[1], int(sys.argv[2]), serial, threaded=True)
