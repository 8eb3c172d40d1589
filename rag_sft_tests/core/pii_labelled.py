"""A labelled set of snippets for measuring PII redaction, written for the tests: questions,
answers and documents in Chinese and English as a RAG service's users write them, each holding
known personal data (kind and value) and decoys that look alike but are not personal (order and
tracking numbers, timestamps, amounts, versions, an ID number or card number whose check fails).

The values are made deterministically (seeded), valid by construction: ID numbers with a real
birth date and their check character, card numbers with their network's prefix and a Luhn
check digit, phone numbers in the formats people type.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date, timedelta

from rag_sft.core import pii


@dataclass
class Snippet:
    text: str
    personal: list[tuple[str, str]] = field(default_factory=list)  # (kind, value as written)
    decoys: list[str] = field(default_factory=list)  # must survive verbatim


def id_number(rng: random.Random, valid: bool = True) -> str:
    region = rng.choice(["110101", "310104", "440305", "510107", "330106", "420111", "610113"])
    born = date(1950, 1, 1) + timedelta(days=rng.randrange(0, 365 * 55))
    body = f"{region}{born:%Y%m%d}{rng.randrange(0, 1000):03d}"
    check = "10X98765432"[sum(int(d) * w for d, w in zip(body, (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2))) % 11]
    if not valid:
        check = rng.choice([c for c in "0123456789X" if c != check])
    return body + check


def luhn_digit(partial: str) -> str:
    total = 0
    for position, digit in enumerate(reversed(partial)):
        value = int(digit)
        if position % 2 == 0:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return str((10 - total % 10) % 10)


def card_number(rng: random.Random, valid: bool = True, grouped: bool = False) -> str:
    prefix, length = rng.choice([("622202", 19), ("621700", 19), ("622848", 19), ("625807", 16), ("4", 16), ("5", 16), ("6228", 16)])
    if prefix == "5":
        prefix = f"5{rng.randint(1, 5)}"
    partial = prefix + "".join(str(rng.randrange(10)) for _ in range(length - len(prefix) - 1))
    check = luhn_digit(partial)
    if not valid:
        check = str((int(check) + rng.randint(1, 9)) % 10)
    number = partial + check
    if grouped:
        return " ".join(number[i : i + 4] for i in range(0, len(number), 4))
    return number


def mobile(rng: random.Random) -> str:
    prefix = rng.choice(["138", "139", "136", "150", "151", "158", "186", "187", "177", "189", "199", "135", "182", "131"])
    rest = f"{rng.randrange(0, 10**8):08d}"
    digits = prefix + rest
    shape = rng.randrange(8)
    return [
        digits,
        f"{digits[:3]} {digits[3:7]} {digits[7:]}",
        f"{digits[:3]}-{digits[3:7]}-{digits[7:]}",
        f"+86 {digits[:3]} {digits[3:7]} {digits[7:]}",
        f"+86{digits}",
        f"0086 {digits}",
        f"(+86) {digits}",
        f"+86-{digits}",
    ][shape]


def landline(rng: random.Random) -> str:
    area, length = rng.choice([("010", 8), ("021", 8), ("0755", 8), ("020", 8), ("0571", 8), ("028", 8), ("027", 8), ("0512", 8)])
    local = str(rng.randint(2, 8)) + "".join(str(rng.randrange(10)) for _ in range(length - 1))
    shape = rng.randrange(4)
    return [
        f"{area}-{local}",
        f"({area}) {local[:4]} {local[4:]}",
        f"+86 {area[1:]} {local[:4]} {local[4:]}",
        f"{area}-{local[:4]}-{local[4:]}",
    ][shape]


INTERNATIONAL = [
    "+1 212-736-5000", "+1 (650) 253-0000", "+44 20 7031 3000", "+49 30 2009 5000", "+81 3-6384-9000",
    "+65 6521 8000", "+852 2869 9111", "+886 2 2376 1000", "+61 2 9374 4000", "+33 1 42 68 53 00",
    "+82 2-2053-3000", "+91 22 6630 3030",
]


def email(rng: random.Random) -> str:
    user = rng.choice(["zhang.wei", "li_na88", "wangfang", "chen.jie+rag", "john.smith", "m.garcia", "yuki-t", "ops.team", "liu1990"])
    domain = rng.choice(["example.com", "qq.com", "163.com", "corp.example.cn", "mail.example.org", "company.com.cn", "gmail.com"])
    return f"{user}@{domain}"


def ipv4(rng: random.Random) -> str:
    return rng.choice([
        f"192.168.{rng.randrange(256)}.{rng.randrange(1, 255)}",
        f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
        f"{rng.randint(1, 223)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
        f"172.{rng.randint(16, 31)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
    ])


def ipv6(rng: random.Random) -> str:
    groups = [f"{rng.randrange(0x10000):x}" for _ in range(8)]
    return rng.choice([
        ":".join(groups),
        f"2001:db8::{groups[0]}:{groups[1]}",
        f"fe80::{groups[2]}:{groups[3]}:{groups[4]}",
        "::1",
        f"2408:8207:{groups[5]}::{groups[6]}",
    ])


def url_secret(rng: random.Random) -> tuple[str, str]:
    """A URL with a secret, and the secret itself."""
    token = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-") for _ in range(rng.randint(20, 40)))
    shape = rng.randrange(7)
    urls = [
        f"https://api.example.com/v1/files?id=42&token={token}",
        f"https://console.example.cn/login/callback#access_token={token}&expires_in=3600",
        f"https://oss.example.com/report.pdf?Expires=1732000000&Signature={token}",
        f"http://reports.internal.example.com:8080/api/export?api_key={token}",
        f"https://hooks.example.com/notify?key={token}",
        f"https://auth.example.com/oauth/callback?code={token}&state=xyz",
        f"postgres://report_user:{token}@db.internal:5432/analytics",
    ]
    return urls[shape], token


# Decoys: look like personal data, are not.
def decoy(rng: random.Random) -> str:
    kind = rng.randrange(16)
    if kind == 14:
        return f"10.0.{rng.randint(19041, 22631)}.{rng.randint(1000, 4000)}"  # a Windows build number
    if kind == 15:
        return f"1{rng.choice('012')}{rng.randrange(10**9):09d}"  # an 11-digit member number (no mobile prefix)
    if kind == 0:
        return f"2024{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}{rng.randrange(10**8):08d}"  # order number, 16 digits
    if kind == 1:
        return str(rng.randint(1_600_000_000, 1_800_000_000))  # Unix timestamp
    if kind == 2:
        return str(rng.randint(1_600_000_000_000, 1_800_000_000_000))  # in milliseconds
    if kind == 3:
        return f"SF{rng.randrange(10**12, 10**13)}"  # courier tracking number
    if kind == 4:
        return f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d} {rng.randrange(24):02d}:{rng.randrange(60):02d}:{rng.randrange(60):02d}"
    if kind == 5:
        return f"¥{rng.randint(1, 99)},{rng.randrange(1000):03d}.00"
    if kind == 6:
        return f"v{rng.randint(1, 9)}.{rng.randint(0, 30)}.{rng.randint(0, 20)}"
    if kind == 7:
        return id_number(rng, valid=False)  # check character wrong
    if kind == 8:
        return card_number(rng, valid=False)  # Luhn fails
    if kind == 9:
        return str(rng.randint(10**11, 2 * 10**11))  # a 12-digit product number
    if kind == 10:
        return f"0x{rng.randrange(0x80000000, 0xFFFFFFFF):08X}"  # an error code
    if kind == 11:
        return f"{rng.randrange(100000, 999999)}"  # a one-time code
    if kind == 12:
        return f"E{rng.randrange(10**11, 10**12)}"  # invoice number with a letter
    return f"{rng.randint(1, 23):02d}:{rng.randrange(60):02d}:{rng.randrange(60):02d}"  # a time of day


ZH_TEMPLATES = [  # (template, the kinds of personal data it may hold)
    ('我的手机号是 {p}，为什么一直收不到验证码？', [pii.PHONE]),
    ('客服让我打 {p}，但是一直占线，还有别的联系方式吗？', [pii.PHONE]),
    ('请把发票寄到我的邮箱 {p}，谢谢', [pii.EMAIL]),
    ('身份证号 {p} 实名认证失败，提示信息不一致', [pii.ID_NUMBER]),
    ('我的银行卡 {p} 提现一直没到账', [pii.BANK_CARD]),
    ('服务器 {p} 上的 Nginx 返回 502，怎么排查？', [pii.IP]),
    ('回调地址 {p} 一直返回 401 是什么原因', [pii.URL_SECRET]),
    ('联系人：王先生，电话 {p}，地址：北京市朝阳区', [pii.PHONE]),
    ('用户反馈：绑定手机{p}后无法登录', [pii.PHONE]),
    ('退款请退到尾号这张卡：{p}', [pii.BANK_CARD]),
    ('我在 {p} 这台机器上部署了 Redis，外网访问不了', [pii.IP]),
    ('我用 {p} 注册的账号被锁定了', [pii.EMAIL, pii.PHONE]),
    ('请核实用户身份：{p}', [pii.ID_NUMBER]),
    ('文档里写的客服热线 {p} 还能打通吗', [pii.PHONE]),
    ('日志里出现了来自 {p} 的大量请求，是被攻击了吗', [pii.IP]),
    ('把这个链接发给同事了：{p}，有风险吗？', [pii.URL_SECRET]),
]

EN_TEMPLATES = [  # (template, the kinds of personal data it may hold)
    ('My phone number is {p} and I never get the verification code.', [pii.PHONE]),
    ('Please call me back at {p} about the refund.', [pii.PHONE]),
    ('Send the invoice to {p}, thanks.', [pii.EMAIL]),
    ('My ID number {p} fails the real-name check.', [pii.ID_NUMBER]),
    ('The withdrawal to my card {p} has not arrived.', [pii.BANK_CARD]),
    ('Nginx on {p} returns 502 for every request, how do I debug it?', [pii.IP]),
    ('The callback {p} keeps returning 401, why?', [pii.URL_SECRET]),
    ('Contact: Mr. Lee, phone {p}, office in Shanghai.', [pii.PHONE]),
    ('I registered with {p} and the account is locked.', [pii.EMAIL, pii.PHONE]),
    ('Refund to this card please: {p}', [pii.BANK_CARD]),
    ('We see a flood of requests from {p} in the access log.', [pii.IP]),
    ('I shared this link with a colleague: {p} is that a problem?', [pii.URL_SECRET]),
]

DECOY_TEMPLATES_ZH = [
    "订单号 {d} 的退款什么时候到账？",
    "日志时间 {d}，接口开始超时",
    "快递单号 {d} 一直没有更新物流",
    "商品编号 {d} 的库存显示有误",
    "升级到 {d} 之后启动报错",
    "金额 {d} 扣款了但订单没生成",
    "错误码 {d} 是什么意思",
    "验证码 {d} 提示已过期",
    "发票号码 {d} 查询不到",
]

DECOY_TEMPLATES_EN = [
    "Order {d} was charged twice.",
    "Since {d} the API times out.",
    "Tracking number {d} has not moved for a week.",
    "After upgrading to {d} the service will not start.",
    "Error {d} appears when I install the update.",
    "The code {d} says it expired.",
]


def _personal_value(kind: str, rng: random.Random) -> tuple[str, str]:
    """(text put into the snippet, value that must disappear)."""
    if kind == pii.PHONE:
        value = rng.choice([mobile, mobile, landline, lambda r: r.choice(INTERNATIONAL)])(rng)
        return value, value
    if kind == pii.EMAIL:
        value = email(rng)
        return value, value
    if kind == pii.ID_NUMBER:
        value = id_number(rng)
        return value, value
    if kind == pii.BANK_CARD:
        value = card_number(rng, grouped=rng.random() < 0.4)
        return value, value
    if kind == pii.IP:
        value = ipv4(rng) if rng.random() < 0.7 else ipv6(rng)
        return value, value
    url, token = url_secret(rng)
    return url, token


def snippets(seed: int = 2026) -> list[Snippet]:
    rng = random.Random(seed)
    made: list[Snippet] = []
    # Personal data, each template several times with fresh values; a third get a decoy too.
    for round_ in range(8):
        for chinese, (template, kinds) in [(True, t) for t in ZH_TEMPLATES] + [(False, t) for t in EN_TEMPLATES]:
            kind = rng.choice(kinds)
            text, value = _personal_value(kind, rng)
            snippet = Snippet(template.format(p=text), [(kind, value)])
            if round_ % 3 == 0:
                extra = decoy(rng)
                snippet.text += f"（订单号 {extra}）" if chinese else f" (order {extra})"
                snippet.decoys.append(extra)
            made.append(snippet)
    # Decoys alone.
    for _ in range(6):
        for template in DECOY_TEMPLATES_ZH + DECOY_TEMPLATES_EN:
            value = decoy(rng)
            made.append(Snippet(template.format(d=value), [], [value]))
    # Documents holding several kinds at once.
    for _ in range(20):
        phone_text, _ = _personal_value(pii.PHONE, rng)
        mail = email(rng)
        host = ipv4(rng)
        order = decoy(rng)
        made.append(Snippet(
            f"【工单记录】用户 {mail} 来电 {phone_text}，反映在 {host} 上访问控制台超时；关联订单 {order}，已转二线处理。",
            [(pii.EMAIL, mail), (pii.PHONE, phone_text), (pii.IP, host)],
            [order],
        ))
    return made
