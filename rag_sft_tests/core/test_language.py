"""The language of a question as a reader decides it (docs/spec.md, "Rule 3: Correction instruction"): Chinese questions
that name English products, APIs and files are Chinese; English questions that quote a Chinese term are English.
Questions written for this test, as users of a technical RAG service ask them."""

import pyarrow as pa
import pytest

from rag_sft.core import rules, tables

CHINESE = [
    "Kubernetes Deployment 如何回滚?",
    "Spring Boot 的 application.yml 怎么配置?",
    "Python 里 asyncio.gather 和 asyncio.wait 有什么区别？",
    "Redis Cluster 和 Sentinel 模式怎么选？",
    "MySQL 的 ON DUPLICATE KEY UPDATE 在并发下会死锁吗？",
    "Kafka consumer group rebalance 太频繁怎么办",
    "Nginx upstream 超时时间在哪里配置",
    "Docker build 的时候 COPY 命令报 no such file or directory 是什么原因",
    "git rebase 和 git merge 应该用哪个？",
    "React useEffect 为什么执行了两次？",
    "Vue3 的 ref 和 reactive 有什么不同",
    "Elasticsearch 查询 timeout 怎么排查",
    "JVM Full GC 频繁，怎么定位是哪个对象？",
    "PostgreSQL VACUUM FULL 会锁表吗",
    "TypeScript interface 和 type 该用哪个",
    "Go 语言 goroutine 泄漏怎么排查？",
    "Linux 磁盘 I/O 很高怎么办",
    "AWS S3 presigned URL 过期时间最长多久？",
    "Prometheus 告警规则 for 字段是什么意思",
    "Spring Cloud Gateway 限流",
    "OOMKilled 之后 Pod 一直 CrashLoopBackOff",
    "Helm chart values.yaml 里的 replicaCount 不生效",
    "Jenkins pipeline 中如何传递参数给下游 job",
    "Flink checkpoint 失败 Checkpoint expired before completing 怎么处理",
    "Hive 表 ALTER TABLE ADD COLUMNS 后旧分区读不到新字段",
    "nginx 报 502 Bad Gateway 是后端挂了吗",
    "请问 API Gateway 的 rate limit 是按 IP 还是按 token 计算？",
    "Terraform state lock 卡住了，如何强制解锁",
    "Python for 循环和 while 循环哪个快",
    "HTTP 401 和 403 的区别是什么",
    "ClickHouse ReplacingMergeTree 去重不生效",
    "Istio sidecar 注入后服务启动变慢",
    "我的 iPhone 收不到 App Store 的验证码",
    "退款流程需要多长时间?",
    "订单 ID 在哪里查看",
    "Excel VLOOKUP 返回 #N/A 怎么解决",
    "Windows Update 失败 error 0x80070005",
    "RabbitMQ 消息堆积，consumer prefetch 设置多少合适",
    # Mostly Chinese with one English product name, an English grammar word inside it.
    "苹果手机的 Find My 功能在哪里打开？",
    "中国银行的 Apple Pay 绑卡失败怎么办",
]

ENGLISH = [
    "How does Kubernetes schedule 容器?",
    "What's the difference between 灰度发布 and 蓝绿部署?",
    "How do I configure the 环境变量 in Docker Compose?",
    "Why does my 订单 show as pending after payment?",
    "Can I change the 收货地址 after the order is shipped?",
    "What does 熔断 mean in a service mesh?",
    "Is there a limit on 提现 per day for new accounts?",
    "How long does the 实名认证 review take?",
    "Where can I find the 发票 for my subscription?",
    "What is the SLA of the 企业版 plan?",
    "How do I roll back a Deployment in Kubernetes?",
    "Why is my Spring Boot app not reading application.yml?",
    "What is the difference between asyncio.gather and asyncio.wait?",
    "How should I size the JVM heap for a Kafka broker?",
    "Does the refund go back to the original payment method?",
    "Which regions support the 专属云 offering and what does it cost?",
    "Why do I get a 502 from nginx when the upstream is healthy?",
    "Can the 会员积分 be transferred to another account?",
    "What happens to my data when the 试用期 ends?",
    "How can I export the 对账单 as CSV from the console?",
    # English grammar around long Chinese names: more Han characters than Latin letters.
    "What does 中国银行 mean?",
    "Can I use WeChat Pay (微信支付) at 上海浦东机场?",
]


@pytest.mark.parametrize("question", CHINESE)
def test_chinese_questions_naming_english_terms_are_chinese(question):
    assert rules.question_language(question) == rules.ZH


@pytest.mark.parametrize("question", ENGLISH)
def test_english_questions_quoting_chinese_terms_are_english(question):
    assert rules.question_language(question) == rules.EN


def test_the_column_form_decides_every_question_as_the_row_form_does():
    questions = CHINESE + ENGLISH + ["", "12345", "退款?", "refund?", "Kubernetes中how to rollback"]
    expected = [rules.question_language(question) for question in questions]
    assert tables.question_languages(pa.array(questions), "auto").to_pylist() == expected
    assert len(CHINESE) + len(ENGLISH) >= 50
