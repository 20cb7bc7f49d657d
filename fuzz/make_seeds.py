#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets into corpus/<target>/ (ignored by git; re-run at will).

Seeds are realistic PMS notifications (docs/plex-protocol.md) in the input layout each target expects, plus a
few odd shapes the decoders must cope with. Usage: python3 make_seeds.py  (from fuzz/)
"""
import hashlib
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))

ITEMS = {
    ("playing", "PlaySessionStateNotification"): [
        '{"sessionKey":"45","clientIdentifier":"4b45c1d2","guid":"","ratingKey":"217468","url":"","key":"/library/metadata/217468","viewOffset":26530,"state":"paused"}',
        '{"sessionKey":46,"ratingKey":"com.gracenote.onconnect://episode/EP0199","viewOffset":0,"state":"buffering"}',
    ],
    ("activity", "ActivityNotification"): [
        '{"event":"updated","uuid":"0f3c2a9e-5b1d-4c6e-9a7b-2d8e4f6a1b3c","Activity":{"uuid":"0f3c2a9e-5b1d-4c6e-9a7b-2d8e4f6a1b3c","type":"library.update.section","cancellable":false,"userID":1,"title":"Scanning Movies","subtitle":"Am\u00e9lie (2001)","progress":42,"Context":{"librarySectionID":"1"}}}',
        '{"event":"ended","Activity":{"uuid":"AB/c+d#\\u0000"}}',
    ],
    ("timeline", "TimelineEntry"): [
        '{"identifier":"com.plexapp.plugins.library","sectionID":"1","itemID":"217468","type":1,"title":"Arrival","state":0,"metadataState":"created","updatedAt":1732518000}',
    ],
    ("status", "StatusNotification"): ['{"title":"Library scan complete","description":"","notificationName":"LIBRARY_UPDATE"}'],
    ("reachability", "ReachabilityNotification"): ['{"reachability":true}'],
    ("transcodeSession.update", "TranscodeSession"): ['{"key":"/transcode/sessions/abc","throttled":false,"progress":12.5,"speed":3.1}'],
    ("preference", "Setting"): ['{"id":"FriendlyName","value":"Living Room"}'],
    ("update.statechange", "Whatever"): ['{"x":1}'],
}


def ws_frame(kind, key, items, size=None):
    size = len(items) if size is None else size
    return '{"NotificationContainer":{"type":"%s","size":%d,"%s":[%s]}}' % (kind, size, key, ",".join(items))


def write(target, data):
    folder = os.path.join(HERE, "corpus", target)
    os.makedirs(folder, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    name = hashlib.sha1(data).hexdigest()
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)


def main():
    frames = []
    for (kind, key), items in ITEMS.items():
        frames.append(ws_frame(kind, key, items))
    frames += [
        ws_frame("status", "StatusNotification", [], size=5),
        '{"NotificationContainer":{"type":5,"size":1,"X":[{"a":1}],"X":[{"b":2}]}}',
        '{"NotificationContainer":{"type":"a","type":"b","X":[{"k":1,"k":2}]}}',
        '{"_elementType":"NotificationContainer","type":"playing","size":1,"_children":[{"_elementType":"PlaySessionStateNotification","sessionKey":"1"}]}',
        '{"type":"activity","size":1,"ActivityNotification":[{"event":"started","uuid":"x"}]}',
        '{"NotificationContainer":{"type":"a\\u0000b+c#d/e","size":1,"T":[{"q":"\\ud83d\\ude00"}]}}',
        '{"NotificationContainer":{"type":"list","S":[1,"two",null,[3]]}}',
    ]
    for frame in frames:
        write("decode_route", frame)
    for (kind, key), items in ITEMS.items():
        for item in items:
            for data in ('{"%s":%s}' % (key, item), '{"%s":[%s]}' % (key, item), ws_frame(kind, key, [item])):
                name = kind.encode()
                write("decode_eventsource", bytes([len(name)]) + name + data.encode())
    write("decode_eventsource", b"\x04ping{}")
    streams = []
    for (kind, key), items in ITEMS.items():
        streams.append("".join("event: %s\ndata: {\"%s\":%s}\n\n" % (kind, key, item) for item in items))
    streams += [
        "\ufeffevent: ping\ndata: {}\n\n",
        ": comment\r\nid: 7\r\nretry: 1500\r\ndata: a\r\ndata:b\r\n\r\n",
        "event: a\rdata: 1\r\revent: b\r\ndata: 2\r\n\r\n",
        "data: " + "x" * 100 + "\n\nevent: ok\ndata: 1\n\n",
        "id: a\0b\ndata: c\n\nretry: 99999999999999999999999\n\n",
    ]
    for stream in streams:
        raw = stream.encode()
        for selector in (5, 70, 0x80, 0xC0):
            cuts = [3, len(raw) // 2, len(raw) - 1]
            header = bytes([selector, len(cuts)]) + b"".join(struct.pack("<H", c) for c in cuts)
            write("sse_parser", header + raw)
    write("sse_parser", bytes([10, 0]) + b"data: \xff\xfe\xfd\xfc\n\n")


if __name__ == "__main__":
    main()
